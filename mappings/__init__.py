"""Mappings: YAML files that turn each source stream into canonical records, and their engine."""

from mappings.engine import (
    Mapping,
    MappingFileError,
    Problem,
    StoreMap,
    check_mapping,
    load_mapping,
    load_mappings,
    load_stores,
    mapping_files,
)

__all__ = [
    "Mapping",
    "MappingFileError",
    "Problem",
    "StoreMap",
    "check_mapping",
    "load_mapping",
    "load_mappings",
    "load_stores",
    "mapping_files",
]
