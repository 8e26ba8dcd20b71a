"""Where backups are kept: the ``BackupStorage`` port's adapters."""
