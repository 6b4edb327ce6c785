"""key_service: owns the key database, the Backoffice page, the JSON API and the outbox."""
