"""Dereferences NULL through ctypes at import: must end as `crashed` (SIGSEGV)."""
import ctypes

ctypes.string_at(0)
