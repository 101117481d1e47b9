"""What the two API functions (tasks, images) share: Glance-shaped errors, the caller, headers."""
