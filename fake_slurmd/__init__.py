"""A callerid responder and simulated compute node for tests."""
