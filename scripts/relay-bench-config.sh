# The relay configuration both relay benchmarks run with: two destinations (TikTok and Meta
# stand-ins on loopback), the consent gate, a mapping and page categories as in a clinic's setup.
# Usage: relay_bench_config LISTEN_PORT DB_PATH SYNCHRONOUS TIKTOK_PORT META_PORT > relay.toml
relay_bench_config() {
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
allowed_origins = ["https://clinic.example"]
[database]
path = "$2"
synchronous = "$3"
[dispatch]
poll_ms = 100
[[mapping]]
from = "BookedGLP1Consultation"
to = "Schedule"
[[destination]]
kind = "tiktok"
endpoint = "http://127.0.0.1:$4/open_api/v1.3/event/track/"
pixel_code = "CBENCH"
[[destination]]
kind = "meta"
endpoint = "http://127.0.0.1:$5/v21.0/1234/events"
pixel_id = "1234"
[[page_category]]
path_pattern = "^/book"
url = "https://clinic.example/booking"
[[page_category]]
path_pattern = ".*"
url = "https://clinic.example/"
TOML
}
