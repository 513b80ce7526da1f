"""Orders, and a Realtime assistant whose tool reads them from the database."""
