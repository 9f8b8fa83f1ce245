"""One module per source trace format; ``base`` holds what they share."""
