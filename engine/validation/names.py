"""The name checks of Kubernetes: DNS labels and subdomains, qualified names (label
and annotation keys) and label values. Each returns what is wrong, or None."""

from __future__ import annotations

import re

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_ALPHANUMERIC_ENDS = ("alphanumeric characters, '-', '_' or '.', "
                      "starting and ending with an alphanumeric character")


def _length_and_pattern_error(value: str, max_length: int, pattern: re.Pattern, requirement: str) -> str | None:
    """The shape of most name checks: too long, else not of the pattern's form."""
    if len(value) > max_length:
        return f"must be no more than {max_length} characters"
    if not pattern.fullmatch(value):
        return requirement
    return None


def _dns_label_error(value: str) -> str | None:
    return _length_and_pattern_error(
        value, 63, _DNS_LABEL,
        "must be a DNS label: lower case letters, digits and '-', starting and ending with a letter or digit")


def _dns_1035_label_error(value: str) -> str | None:
    return _length_and_pattern_error(
        value, 63, _DNS_1035_LABEL,
        "must be a DNS-1035 label: lower case letters, digits and '-', starting with a letter "
        "and ending with a letter or digit")


def _dns_subdomain_error(value: str) -> str | None:
    return _length_and_pattern_error(
        value, 253, _DNS_SUBDOMAIN,
        "must be a DNS subdomain: lower case letters, digits, '-' and '.', starting and "
        "ending with a letter or digit")


def _path_segment_error(value: str) -> str | None:
    # RBAC names only need to be usable in a URL path (e.g. "system:aggregate-to-edit").
    if value in (".", ".."):
        return f"may not be {value!r}"
    if "/" in value or "%" in value:
        return "may not contain '/' or '%'"
    return None


def _qualified_name_error(key: str) -> str | None:
    """A label or annotation key: an optional DNS-subdomain prefix and '/', then a name."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "prefix before '/' must not be empty"
    if prefix and (error := _dns_subdomain_error(prefix)):
        return f"prefix {prefix!r} {error}"
    if not name:
        return "name part must not be empty"
    if error := _length_and_pattern_error(name, 63, _QUALIFIED_NAME, f"must consist of {_ALPHANUMERIC_ENDS}"):
        return f"name part {error}"
    return None


def _label_value_error(value: str) -> str | None:
    return _length_and_pattern_error(value, 63, _LABEL_VALUE, f"must be empty or consist of {_ALPHANUMERIC_ENDS}")
