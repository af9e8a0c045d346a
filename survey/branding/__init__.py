"""The company's identity on the customer's side: name, sender, logo, colour."""
