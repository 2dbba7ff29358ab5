"""Who may do what (roles and permissions) and the tamper-evident audit log."""
