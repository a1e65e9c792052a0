"""Small widgets of the main window, each drawing one thing."""
