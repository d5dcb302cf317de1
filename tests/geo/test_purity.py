"""geo/ stays pure: importing it pulls in no database, HTTP or map library."""

import subprocess
import sys


def test_geo_imports_no_service_libraries():
    code = (
        "import sys, pkgutil, importlib, geo\n"
        "for m in pkgutil.iter_modules(geo.__path__): importlib.import_module('geo.' + m.name)\n"
        "bad = [m for m in ('sqlalchemy', 'fastapi', 'folium', 'asyncpg', 'psycopg', "
        "'geoalchemy2', 'starlette') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
