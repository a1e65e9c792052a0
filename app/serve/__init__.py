"""`duetto serve`: a local backend served over the duplex wire (app/model/remote/wire.py)."""
