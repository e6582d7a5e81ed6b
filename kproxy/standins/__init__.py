"""In-process stand-ins for the services kproxy talks to, used by tests, demo and bench."""
