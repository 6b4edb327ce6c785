"""auth_gateway: the authenticating reverse proxy in front of the Backoffice API."""
