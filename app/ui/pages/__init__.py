"""The settings dialog's pages: personas, model, devices, conversation."""
