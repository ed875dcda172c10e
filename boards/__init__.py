"""addershift.boards."""
