from .selective_scan import BACKENDS, scan_backend, selective_scan, selective_scan_ref

__all__ = ['BACKENDS', 'scan_backend', 'selective_scan', 'selective_scan_ref']
