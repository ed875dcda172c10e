"""addershift.sim."""
