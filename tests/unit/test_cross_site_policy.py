"""The browser-safety policies as plain functions: state-changing requests, origins, body types, hosts."""

from __future__ import annotations

import pytest

from fooocus_es.api.body_types import body_type_refusal, is_json_type
from fooocus_es.api.cors import cors_config
from fooocus_es.api.cross_site import changes_state, cross_site_refusal
from fooocus_es.api.hosts import allowed_hosts, host_name, host_refusal
from fooocus_es.settings import Settings, settings_from_env

LOCAL = cors_config(Settings()).is_origin_allowed


# -- which requests change state ------------------------------------------------------------------
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "post"])
def test_every_unsafe_method_changes_state(method: str) -> None:
    assert changes_state(method, {})


@pytest.mark.parametrize(
    "query", [{"action": "delete"}, {"action": "DELETE"}, {"delete": "true"}, {"delete": "True"}, {"delete": "1"}]
)
def test_gets_that_delete_change_state(query: dict[str, str]) -> None:
    assert changes_state("GET", query)


@pytest.mark.parametrize("query", [{}, {"query": "history"}, {"delete": "false"}, {"action": "list"}])
def test_reads_do_not(query: dict[str, str]) -> None:
    assert not changes_state("GET", query) and not changes_state("HEAD", query)


# -- where a state-changing request may come from ---------------------------------------------------
@pytest.mark.parametrize("origin", ["null", "http://localhost:1234", "http://127.0.0.1:7866", "http://[::1]:80"])
def test_local_origins_pass(origin: str) -> None:
    assert cross_site_refusal(origin, "cross-site", "127.0.0.1:7866", LOCAL) is None


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost.evil.example", "file://", "garbage"])
def test_foreign_origins_are_refused_with_the_way_out(origin: str) -> None:
    refusal = cross_site_refusal(origin, None, "127.0.0.1:7866", LOCAL)
    assert refusal is not None and repr(origin) in refusal
    assert "--cors-origins" in refusal and "FOOOCUS_ES_API_KEY" in refusal


def test_same_origin_passes_whatever_the_scheme_and_case() -> None:
    # A LAN page served by this server itself: its Origin names the Host it was loaded from.
    assert cross_site_refusal("http://gpu-box.lan:7866", "same-origin", "GPU-box.lan:7866", LOCAL) is None
    assert cross_site_refusal("https://images.example", None, "images.example", LOCAL) is None
    assert cross_site_refusal("http://gpu-box.lan:7866", None, "gpu-box.lan:9999", LOCAL) is not None
    assert cross_site_refusal("http://gpu-box.lan:7866", None, None, LOCAL) is not None


def test_without_origin_only_a_cross_site_fetch_is_refused() -> None:
    refusal = cross_site_refusal(None, "cross-site", "127.0.0.1:7866", LOCAL)
    assert refusal is not None and "Sec-Fetch-Site: cross-site" in refusal
    for site in (None, "none", "same-origin", "same-site"):  # curl/Python, the address bar, own pages
        assert cross_site_refusal(None, site, "127.0.0.1:7866", LOCAL) is None


def test_the_check_follows_the_cors_list() -> None:
    configured = cors_config(Settings(cors_origins="https://app.example")).is_origin_allowed
    assert cross_site_refusal("https://app.example", None, "127.0.0.1:7866", configured) is None
    assert cross_site_refusal("null", None, "127.0.0.1:7866", configured) is not None  # null dropped
    anything = cors_config(Settings(cors_origins="*")).is_origin_allowed
    assert cross_site_refusal("https://evil.example", None, "127.0.0.1:7866", anything) is None


# -- body types --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/x+json"]
)
def test_json_types(content_type: str) -> None:
    assert is_json_type(content_type)
    assert body_type_refusal(content_type, forms=False) is None


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "text/json", "application/jsonp", "application/octet-stream"],
)  # fmt: skip
def test_other_types_are_refused_on_json_routes(content_type: str) -> None:
    refusal = body_type_refusal(content_type, forms=False)
    assert refusal is not None and content_type.partition(";")[0] in refusal and "application/json" in refusal


def test_no_content_type_is_json() -> None:
    assert body_type_refusal(None, forms=False) is None and body_type_refusal("", forms=False) is None


def test_form_routes_take_forms_and_json_but_not_text() -> None:
    for accepted in ("multipart/form-data; boundary=a", "application/x-www-form-urlencoded", "application/json", None):
        assert body_type_refusal(accepted, forms=True) is None
    refusal = body_type_refusal("text/plain", forms=True)
    assert refusal is not None and "multipart/form-data" in refusal


# -- hosts (DNS rebinding) ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:7866", "127.0.0.1"), ("[::1]:7866", "::1"), ("[::1]", "::1"), ("LocalHost", "localhost"),
     ("localhost.:80", "localhost"), ("evil.example:7866", "evil.example")],
)  # fmt: skip
def test_host_names(header: str, name: str) -> None:
    assert host_name(header) == name


def test_the_loopback_default_serves_local_names_and_the_base_url_only() -> None:
    allowed = allowed_hosts(Settings(base_url="https://images.example.org"))
    assert allowed == {"localhost", "127.0.0.1", "::1", "images.example.org"}
    for header in ("localhost:7866", "127.0.0.1", "[::1]:1", "images.example.org"):
        assert host_refusal(header, allowed) is None
    refusal = host_refusal("evil.example:7866", allowed)
    assert refusal is not None and "'evil.example:7866'" in refusal
    assert "--allowed-hosts" in refusal and "FOOOCUS_ES_ALLOWED_HOSTS" in refusal and "[::1]" in refusal
    assert host_refusal(None, allowed) is None  # HTTP/1.0 without a Host: no browser sends that


def test_a_specific_bind_address_is_served() -> None:
    assert "192.168.1.5" in (allowed_hosts(Settings(host="192.168.1.5")) or ())


def test_allowed_hosts_extend_and_star_opens() -> None:
    allowed = allowed_hosts(Settings(allowed_hosts="gpu-box.lan, Other.Example:7866"))
    assert allowed is not None and {"gpu-box.lan", "other.example", "localhost"} <= allowed
    assert allowed_hosts(Settings(allowed_hosts="*")) is None


def test_a_key_or_a_wildcard_bind_serves_any_host_unless_hosts_are_listed() -> None:
    assert allowed_hosts(Settings(api_key="k")) is None
    assert allowed_hosts(Settings(host="0.0.0.0")) is None and allowed_hosts(Settings(host="::")) is None
    listed = allowed_hosts(Settings(host="0.0.0.0", api_key="k", allowed_hosts="gpu-box.lan"))
    assert listed is not None and "gpu-box.lan" in listed and "0.0.0.0" not in listed
    assert host_refusal("evil.example", listed) is not None


def test_allowed_hosts_come_from_the_environment_too() -> None:
    settings = settings_from_env({"FOOOCUS_ES_ALLOWED_HOSTS": "gpu-box.lan"})
    assert host_refusal("gpu-box.lan:7866", allowed_hosts(settings)) is None
    assert host_refusal("evil.example", allowed_hosts(settings)) is not None
