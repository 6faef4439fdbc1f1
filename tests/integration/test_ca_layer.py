# secrets: the CA bundle a sandbox sees (/etc/ssl/certs/ca-certificates.crt,
# the image's with hutchd's interception CA appended) comes from one
# read-only layer hutchd writes once (src/daemon/net/ca_layer.c) and
# hutch-init lays over the image, instead of a copy written into every
# sandbox's writable layer. Same path, bytes, owner and mode as the copy;
# writable by sandbox root like any image file (copy-up), never on the host.
import glob
import os

BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def image_root():
    cache = os.environ.get("HUTCH_IMAGE_CACHE", "/var/cache/hutch/images")
    return os.path.join(cache, "debian-13", "rootfs")


def expected_bundle(hutchd):
    with open(image_root() + BUNDLE, "rb") as f:
        img = f.read()
    with open(os.path.join(hutchd.state_dir, "ca", "ca.crt"), "rb") as f:
        ca = f.read()
    if img and not img.endswith(b"\n"):
        img += b"\n"
    return img + ca + (b"" if ca.endswith(b"\n") else b"\n")


def test_bundle_is_the_images_plus_the_ca_from_one_shared_layer(hutchd, sandbox):
    want = expected_bundle(hutchd)
    r = sandbox.run("cat", [BUNDLE])
    assert r["code"] == 0 and r["stdout"] == want, (len(r["stdout"]), len(want))
    r = sandbox.run("stat", ["-c", "%U %G %a", BUNDLE, "/etc/ssl/certs", "/etc"])
    assert r["stdout"].decode().split("\n")[:3] == ["root root 644", "root root 755", "root root 755"], r
    # one layer on the host for every sandbox, holding exactly those bytes
    layers = glob.glob(os.path.join(hutchd.state_dir, "ca-layers", "*"))
    assert len(layers) == 1, layers
    with open(layers[0] + BUNDLE, "rb") as f:
        assert f.read() == want
    # and the sandbox reads that file, not a copy: overlayfs reports a lower
    # file's own inode number (a copy in the writable layer would have another)
    r = sandbox.run("stat", ["-c", "%i", BUNDLE])
    assert int(r["stdout"]) == os.stat(layers[0] + BUNDLE).st_ino, r
    # the sandbox is not told where it lives on the host
    r = sandbox.run("cat", ["/proc/self/mountinfo"])
    assert b"/proc" in r["stdout"] and b"ca-layers" not in r["stdout"] and hutchd.state_dir.encode() not in r["stdout"]


def test_sandbox_root_can_change_its_bundle_without_touching_the_layer_or_another_sandbox(hutchd, sandbox):
    want = expected_bundle(hutchd)
    r = sandbox.sh(f"sh -c 'echo \"# mine\" >> {BUNDLE} && tail -n 1 {BUNDLE}'", sudo=True)
    assert r["code"] == 0 and r["stdout"] == b"# mine\n", r
    # control: app may not
    r = sandbox.sh(f"echo x >> {BUNDLE}")
    assert r["code"] != 0 and b"Permission denied" in r["stderr"], r
    layer = glob.glob(os.path.join(hutchd.state_dir, "ca-layers", "*"))[0]
    with open(layer + BUNDLE, "rb") as f:
        assert f.read() == want
    other = hutchd.create_sandbox()
    try:
        assert other.run("cat", [BUNDLE])["stdout"] == want
    finally:
        other.ws.close()


def test_tls_clients_trust_the_bundle(hutchd, sandbox):
    with open(os.path.join(hutchd.state_dir, "ca", "ca.crt"), "rb") as f:
        ca = f.read()
    r = sandbox.run("openssl", ["verify", "-CAfile", BUNDLE], stdin=ca)
    assert r["code"] == 0 and b"OK" in r["stdout"], r
    # control: the same check without the bundle fails
    r = sandbox.run("openssl", ["verify", "-CAfile", "/dev/null"], stdin=ca)
    assert r["code"] != 0, r
    assert sandbox.sh("echo $SSL_CERT_FILE")["stdout"].decode().strip() == BUNDLE
