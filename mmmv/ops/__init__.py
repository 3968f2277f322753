from .attention import attention, attention_backend
from .selective_scan import BACKENDS, scan_backend, selective_scan, selective_scan_ref

__all__ = ['BACKENDS', 'attention', 'attention_backend', 'scan_backend', 'selective_scan',
           'selective_scan_ref']
