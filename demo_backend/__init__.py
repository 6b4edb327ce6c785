"""A demo echo backend to put behind the gateway: it answers with what it received."""
