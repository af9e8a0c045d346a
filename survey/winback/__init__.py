"""The win-back list: consenting contacts, and its exports."""
