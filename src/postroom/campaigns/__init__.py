"""Newsletter campaigns: fan a creator's post out to a list, exactly once per recipient."""
