"""Built-in plugins, installed as ``autotransfer_plugins``; each module is one entry point."""
