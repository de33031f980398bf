"""The emulated Cloud Storage: reachable as Google's hosts over TLS, and nothing else."""
import http.client
import json

import pytest
import requests

from pipeline.gcs_emulator import EmulatedGcs, LOOPBACK


@pytest.fixture(scope="module")
def gcs():
    with EmulatedGcs() as emulated:
        emulated.create_bucket("cxr-proxy-test")
        yield emulated


def _proxy(gcs) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(LOOPBACK, gcs.proxy_port, timeout=30)


def test_connections_to_other_hosts_are_refused(gcs):
    connection = _proxy(gcs)
    connection.request("CONNECT", "example.com:443")
    assert connection.getresponse().status == 403
    connection = _proxy(gcs)
    connection.request("GET", "http://example.com/")
    assert connection.getresponse().status == 403


def test_google_hosts_answer_over_tls_signed_by_the_throwaway_ca(gcs):
    proxies = {"https": gcs.proxy_url, "http": gcs.proxy_url}
    upload = requests.post(
        "https://storage.googleapis.com/upload/storage/v1/b/cxr-proxy-test/o",
        params={"uploadType": "media", "name": "empty-marker/"}, data=b"",
        proxies=proxies, verify=gcs.ca_file, timeout=30)
    assert upload.status_code == 200, upload.text  # an empty upload, as gfile.makedirs sends
    listing = requests.get("https://www.googleapis.com/storage/v1/b/cxr-proxy-test/o",
                           proxies=proxies, verify=gcs.ca_file, timeout=30)
    assert [item["name"] for item in listing.json()["items"]] == ["empty-marker/"]
    token = requests.post("https://oauth2.googleapis.com/token", proxies=proxies,
                          verify=gcs.ca_file, timeout=30)
    assert json.loads(token.text)["token_type"] == "Bearer"
    with pytest.raises(requests.exceptions.SSLError):  # not trusted without the CA
        requests.get("https://www.googleapis.com/storage/v1/b/cxr-proxy-test/o",
                     proxies=proxies, verify=True, timeout=30)
