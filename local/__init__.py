"""Running the application locally, without AWS: the local stack and its helpers."""
