"""Country and network (ASN / organisation) of a peer address, from an offline database.

Default: the data files that ship inside the ``geoip2fast`` package (country, and ASN organisation names),
so nothing is looked up online. An operator may point ``geoip_mmdb`` at MaxMind GeoLite2/GeoIP2 ``.mmdb``
files (country or ASN); that needs the optional ``maxminddb`` package. Private and loopback addresses
get country ``--`` and the owner the database gives (IANA for loopback).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeoInfo:
    country: str | None
    asn: str | None  # "AS15169 GOOGLE" when the number is known, else the organisation name
    network: str | None

    def to_json(self) -> dict[str, str | None]:
        return {"country": self.country, "asn": self.asn, "network": self.network}


UNKNOWN = GeoInfo(None, None, None)


@functools.lru_cache(maxsize=1)
def _geoip2fast() -> tuple[Any, Any] | None:
    try:
        from geoip2fast import GeoIP2Fast
    except ImportError:
        return None
    try:
        return GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn.dat.gz"), None
    except Exception as exc:  # the data file is missing or unreadable
        log.warning("geoip2fast data not usable: %s", exc)
        return None


class GeoLookup:
    """``lookup(ip) -> GeoInfo``; never raises, caches answers."""

    def __init__(self, mmdb_paths: list[str] | None = None) -> None:
        self._readers: list[Any] = []
        for path in mmdb_paths or []:
            try:
                import maxminddb  # type: ignore[import-not-found]

                self._readers.append(maxminddb.open_database(path))
            except ImportError:
                log.warning("geoip_mmdb %s given but the maxminddb package is not installed", path)
            except (OSError, ValueError) as exc:
                log.warning("cannot open %s: %s", path, exc)
        self.lookup = functools.lru_cache(maxsize=65_536)(self._lookup)

    def _lookup(self, ip: str) -> GeoInfo:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return UNKNOWN
        if self._readers:
            return self._from_mmdb(ip)
        engines = _geoip2fast()
        if engines is None:
            return UNKNOWN
        try:
            r = engines[0].lookup(ip)
        except Exception:
            return UNKNOWN
        country = r.country_code if r.country_code and r.country_code != "--" else None
        return GeoInfo(country or ("--" if r.is_private else None), r.asn_name or None, r.asn_cidr or r.cidr or None)

    def _from_mmdb(self, ip: str) -> GeoInfo:
        country = asn = network = None
        for reader in self._readers:
            try:
                record, prefix = reader.get_with_prefix_len(ip)
            except ValueError:
                continue
            if not record:
                continue
            if "country" in record:
                country = record["country"].get("iso_code", country)
            if "autonomous_system_number" in record:
                org = record.get("autonomous_system_organization", "")
                asn = f"AS{record['autonomous_system_number']} {org}".strip()
                network = f"{ip}/{prefix}"
        return GeoInfo(country, asn, network)
