"""Accounts: projects, people's roles in them, and the checks every read and write goes through."""
