"""The customer's side: the signed survey pages, answers and consent changes."""
