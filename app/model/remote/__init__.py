"""A model on another machine, behind the backend contract, over the duplex wire."""
