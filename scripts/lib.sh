# Shared by scripts/demo and scripts/test: idempotent set-up steps for a fresh Debian machine.

log() { printf '\033[1m[gridmap]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

apt_install() {
  log "installing Debian packages: $*"
  as_root apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv 2>/dev/null || { apt_install python3-venv python3-pip && python3 -m venv .venv; }
    .venv/bin/pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  fi
}

ensure_postgis() {
  local version
  if ! command -v pg_lsclusters >/dev/null; then
    apt_install postgresql || { log "could not install PostgreSQL; database tests will skip"; return 0; }
  fi
  version=$(pg_lsclusters -h | awk 'NR==1 {print $1}')
  if [ -z "$version" ]; then log "no PostgreSQL cluster found; database tests will skip"; return 0; fi
  if ! dpkg -s "postgresql-$version-postgis-3" >/dev/null 2>&1; then
    apt_install "postgresql-$version-postgis-3" || log "could not install PostGIS; database tests will skip"
  fi
  if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster "$version" main start || true
  fi
}

ensure_gdal() {
  # GDAL's command-line tools: the tests read the OGC API Features endpoint with ogrinfo/ogr2ogr.
  if ! command -v ogrinfo >/dev/null; then
    apt_install gdal-bin || log "could not install gdal-bin; the GDAL tests will skip"
  fi
}

ensure_pages() {
  # The pages' browser libraries (Leaflet and friends), pinned in api/pages/package-lock.json and served by
  # the app itself: no CDN.
  if ! command -v npm >/dev/null; then apt_install nodejs npm; fi
  if [ ! -d api/pages/node_modules ] || [ api/pages/package-lock.json -nt api/pages/node_modules ]; then
    log "installing the pages' browser libraries (npm ci)"
    (cd api/pages && npm ci --no-audit --no-fund --loglevel=error 2>&1 | grep -v 'Unknown user config' || true)
    touch api/pages/node_modules
  fi
}

ensure_chromium() {
  # The page tests drive Debian's Chromium (Playwright's own browser download is not reachable here); the
  # CJK fonts make the Chinese UI legible in their screenshots.
  if ! command -v chromium >/dev/null || ! dpkg -s fonts-noto-cjk >/dev/null 2>&1; then
    apt_install chromium fonts-noto-cjk || log "could not install chromium; the page tests will skip"
  fi
}
