"""Departures: a lost account and its contact, recorded from the API, CSV or demo."""
