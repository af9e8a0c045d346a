"""Staff accounts: users and roles, passwords, login sessions, access checks."""
