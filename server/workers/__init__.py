"""Worker classes: sync, thread, event; one shared base."""
