"""The customer's answers: the Response model and the verbs that record them."""
