"""addershift.hw."""
