"""addershift.sw."""
