"""Compute drivers: where instances' servers and volumes come from (``fake`` here; Nova in a cloud)."""
