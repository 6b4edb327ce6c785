"""A demo echo backend to put behind the gateway."""
