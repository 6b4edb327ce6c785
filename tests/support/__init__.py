"""Test bed: real services, isolation helpers and a fault-injection proxy."""
