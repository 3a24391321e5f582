"""The curator's views (one module each) and the registry that puts them in the app."""
