"""An emulated Cloud Storage on loopback that TensorFlow, Beam and the Python client all reach.

TensorFlow's built-in GCS file system has its endpoints fixed (`www.googleapis.com`,
`storage.googleapis.com`, HTTPS) but its libcurl honours `https_proxy` and `CURL_CA_BUNDLE`.
So the emulator is two parts, both on 127.0.0.1:

- the storage itself: `gcp-storage-emulator` (PyPI) in memory, speaking Cloud Storage's JSON
  API over plain HTTP;
- a proxy in front of it. TensorFlow's CONNECT to the Google host names is answered by the
  proxy itself: it terminates TLS with a certificate from a throw-away CA made for this run
  (trusted through `CURL_CA_BUNDLE`) and hands each request to the emulator. The Python
  client (Beam's `gs://` file system) reaches the same proxy through `STORAGE_EMULATOR_HOST`.
  A CONNECT to any other host is refused, so nothing leaves the machine. The proxy also
  turns an empty simple upload (what `tf.io.gfile.makedirs` sends) into the equivalent
  multipart upload, which the emulator accepts.

Both run in a child process. No root, network namespace or Debian tool is needed;
`environment()` gives the variables a process needs to use it.
"""
import datetime
import http.client
import json
import logging
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import uuid
from typing import Dict, List, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"
GOOGLE_STORAGE_HOSTS = ("www.googleapis.com", "storage.googleapis.com")
# google-auth refreshes the credentials written by EmulatedGcs here; the proxy answers.
OAUTH_HOST = "oauth2.googleapis.com"
INTERCEPTED_HOSTS = GOOGLE_STORAGE_HOSTS + (OAUTH_HOST,)
# TensorFlow sends this token instead of asking a metadata server or OAuth for one.
TEST_TOKEN = "emulated-gcs"
PROJECT = "emulated-project"
MAX_HEADER_LINES = 200
logger = logging.getLogger(__name__)


class EmulatorError(Exception):
    """The emulated bucket could not be started or used."""


def _certificates(folder: str) -> Tuple[str, str, str]:
    """(CA certificate, server certificate, server key) files for the Google host names,
    signed by a CA made now and thrown away with `folder`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cxr emulated GCS CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
              encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                          GOOGLE_STORAGE_HOSTS[0])]))
              .issuer_name(ca_name).public_key(key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(hours=1))
              .not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.SubjectAlternativeName(
                  [x509.DNSName(host) for host in INTERCEPTED_HOSTS]), critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = tuple(os.path.join(folder, name) for name in ("ca.pem", "server.pem", "server.key"))
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(server.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


def _read_head(stream) -> Optional[Tuple[str, List[Tuple[str, str]]]]:
    """(request line, headers) of the next request, or None when the client closed."""
    line = stream.readline(65537)
    while line in (b"\r\n", b"\n"):
        line = stream.readline(65537)
    if not line:
        return None
    headers = []
    for _ in range(MAX_HEADER_LINES):
        header = stream.readline(65537)
        if header in (b"\r\n", b"\n", b""):
            return line.decode("latin-1").strip(), headers
        name, _, value = header.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    raise EmulatorError("request with too many header lines")


def _header(headers: List[Tuple[str, str]], name: str) -> Optional[str]:
    return next((value for key, value in headers if key.lower() == name.lower()), None)


def _read_body(stream, headers: List[Tuple[str, str]]) -> bytes:
    if (_header(headers, "Transfer-Encoding") or "").lower() == "chunked":
        body = b""
        while True:
            size = int(stream.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while stream.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return body
            body += stream.read(size)
            stream.readline()
    return stream.read(int(_header(headers, "Content-Length") or 0))


def _empty_media_as_multipart(method: str, target: str, headers: List[Tuple[str, str]],
                              body: bytes) -> Tuple[str, List[Tuple[str, str]], bytes]:
    """An empty `uploadType=media` upload as the equivalent multipart upload (same object
    name, empty content): gcp-storage-emulator fails the former with a server error."""
    url = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(url.query)
    if method != "POST" or body or query.get("uploadType") != ["media"] \
            or not url.path.startswith("/upload/"):
        return target, headers, body
    boundary = uuid.uuid4().hex
    content_type = _header(headers, "Content-Type") or "application/octet-stream"
    metadata = json.dumps({"name": query["name"][0]})
    body = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            f"{metadata}\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n\r\n"
            f"--{boundary}--\r\n").encode()
    query["uploadType"] = ["multipart"]
    target = urllib.parse.urlunsplit(("", "", url.path, urllib.parse.urlencode(query, True), ""))
    headers = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")]
    headers.append(("Content-Type", f'multipart/related; boundary="{boundary}"'))
    return target, headers, body


def _token_response() -> Tuple[int, str, List[Tuple[str, str]], bytes]:
    """OAuth's answer to a refresh: an access token the emulator accepts (it checks none)."""
    token = {"access_token": TEST_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
    return 200, "OK", [("Content-Type", "application/json")], json.dumps(token).encode()


class _ProxyHandler(socketserver.StreamRequestHandler):
    """One client connection: CONNECT (TLS terminated here), absolute-form plain HTTP
    (what curl sends through http_proxy) or origin-form requests (STORAGE_EMULATOR_HOST)."""

    server: "_ProxyServer"

    def handle(self) -> None:
        try:
            head = _read_head(self.rfile)
            if head is None:
                return
            method, target, _ = head[0].split(" ", 2)
            if method == "CONNECT":
                host = target.rsplit(":", 1)[0]
                if host not in INTERCEPTED_HOSTS:
                    self._refuse(host)
                    return
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.wfile.flush()
                tls = self.server.tls.wrap_socket(self.connection, server_side=True)
                with tls.makefile("rb") as reader, tls.makefile("wb") as writer:
                    self._serve(reader, writer, None, host)
                return
            self._serve(self.rfile, self.wfile, head, None)
        except (ConnectionError, ssl.SSLError, socket.timeout) as error:
            logger.debug("emulated GCS proxy: connection ended: %s", error)

    def _refuse(self, host: str) -> None:
        logger.warning("emulated GCS proxy: refused a connection to %s", host)
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")

    def _serve(self, reader, writer, head, host: Optional[str]) -> None:
        """Requests on one connection, in turn, until the client closes it."""
        while True:
            head = head or _read_head(reader)
            if head is None:
                return
            method, target, _ = head[0].split(" ", 2)
            headers = head[1]
            head = None
            request_host = host
            if "://" in target:
                url = urllib.parse.urlsplit(target)
                request_host = url.hostname
                if request_host not in INTERCEPTED_HOSTS:
                    self._refuse(request_host or target)
                    return
                target = urllib.parse.urlunsplit(("", "", url.path, url.query, ""))
            if (_header(headers, "Expect") or "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                writer.flush()
            body = _read_body(reader, headers)
            if request_host == OAUTH_HOST:
                status, reason, response_headers, payload = _token_response()
            else:
                status, reason, response_headers, payload = self.server.forward(
                    method, target, headers, body)
            lines = [f"HTTP/1.1 {status} {reason}"] + [
                f"{k}: {v}" for k, v in response_headers] + [
                f"Content-Length: {len(payload)}", "", ""]
            writer.write("\r\n".join(lines).encode("latin-1"))
            if method != "HEAD":
                writer.write(payload)
            writer.flush()
            if (_header(headers, "Connection") or "").lower() == "close":
                return


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, emulator_port: int, tls: ssl.SSLContext):
        super().__init__((LOOPBACK, 0), _ProxyHandler)
        self.emulator_port = emulator_port
        self.tls = tls

    def forward(self, method: str, target: str, headers: List[Tuple[str, str]], body: bytes
                ) -> Tuple[int, str, List[Tuple[str, str]], bytes]:
        target, headers, body = _empty_media_as_multipart(method, target, headers, body)
        skip = {"content-length", "transfer-encoding", "expect", "connection",
                "proxy-connection", "keep-alive"}
        connection = http.client.HTTPConnection(LOOPBACK, self.emulator_port, timeout=300)
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in skip:
                    connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            payload = response.read()
            response_headers = [(k, v) for k, v in response.getheaders()
                                if k.lower() not in skip]
            return response.status, response.reason, response_headers, payload
        finally:
            connection.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def serve(folder: str) -> None:
    """The emulator and its proxy in this process until stdin closes (EmulatedGcs's child):
    prints one JSON line with the proxy's port and the CA and credential files."""
    from gcp_storage_emulator.server import create_server

    ca_file, cert_file, key_file = _certificates(folder)
    credentials_file = os.path.join(folder, "credentials.json")
    with open(credentials_file, "w") as f:
        json.dump({"type": "authorized_user", "client_id": "emulated",
                   "client_secret": "emulated", "refresh_token": "emulated"}, f)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    port = _free_port()
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    server = create_server(LOOPBACK, port, in_memory=True)
    server.start()
    proxy = _ProxyServer(port, tls)
    threading.Thread(target=proxy.serve_forever, daemon=True, name="proxy").start()
    print(json.dumps({"proxy_port": proxy.server_address[1], "ca_file": ca_file,
                      "credentials_file": credentials_file}), flush=True)
    try:
        sys.stdin.read()
    finally:
        proxy.shutdown()
        server.stop()


class EmulatedGcs:
    """Context manager: the emulator and its proxy on loopback, in a child process (a
    TensorFlow call that holds the GIL while it waits for the network, such as a SavedModel
    write, must not stop the server it waits for)."""

    def __init__(self):
        self._folder = None
        self._process = None
        self.proxy_port = None
        self.ca_file = None
        self.credentials_file = None

    def __enter__(self) -> "EmulatedGcs":
        self._folder = tempfile.TemporaryDirectory(prefix="cxr-gcs-")
        # The child's log goes to a file: an unread pipe could fill and stop the server.
        log_file = os.path.join(self._folder.name, "emulator.log")
        with open(log_file, "w") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from pipeline.gcs_emulator import serve; "
                 "serve(sys.argv[1])", self._folder.name],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        line = self._process.stdout.readline()
        if not line:
            self._process.wait()
            with open(log_file) as log:
                error = log.read().strip().splitlines()
            self.__exit__(None, None, None)
            raise EmulatorError("the emulated Cloud Storage did not start: "
                                f"{error[-1] if error else 'no output'}")
        started = json.loads(line)
        self.proxy_port = started["proxy_port"]
        self.ca_file = started["ca_file"]
        self.credentials_file = started["credentials_file"]
        return self

    def __exit__(self, *exc_info) -> None:
        if self._process:
            try:
                self._process.stdin.close()
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._folder:
            self._folder.cleanup()
            self._folder = None

    @property
    def proxy_url(self) -> str:
        return f"http://{LOOPBACK}:{self.proxy_port}"

    def environment(self) -> Dict[str, str]:
        """Variables that send a process's Cloud Storage traffic here and nowhere else."""
        return {
            # TensorFlow (libcurl): every HTTPS and HTTP request goes through the proxy.
            "https_proxy": self.proxy_url, "http_proxy": self.proxy_url,
            "HTTPS_PROXY": self.proxy_url, "HTTP_PROXY": self.proxy_url,
            "no_proxy": "localhost,127.0.0.1,::1", "NO_PROXY": "localhost,127.0.0.1,::1",
            "CURL_CA_BUNDLE": self.ca_file,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": TEST_TOKEN,
            # The Python client (Beam's gs://): to the proxy, with credentials that
            # google-auth refreshes through the proxy (OAuth emulated there), so it never
            # looks for a metadata server.
            "STORAGE_EMULATOR_HOST": self.proxy_url,
            "GOOGLE_APPLICATION_CREDENTIALS": self.credentials_file,
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "REQUESTS_CA_BUNDLE": self.ca_file,
        }

    def create_bucket(self, name: str) -> None:
        """Through the JSON API, as `gcloud storage buckets create` would."""
        connection = http.client.HTTPConnection(LOOPBACK, self.proxy_port, timeout=60)
        try:
            connection.request("POST", f"/storage/v1/b?project={PROJECT}",
                               json.dumps({"name": name}),
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        if response.status not in (200, 409):
            raise EmulatorError(f"cannot create bucket {name}: HTTP {response.status} "
                                f"{payload[:200]!r}")
