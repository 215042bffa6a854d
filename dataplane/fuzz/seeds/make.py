#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs next to this file, one directory per
target: well-formed inputs that reach past the first checks (valid KEXINITs,
packets that open under the targets' fixed key, userauth requests whose
signatures verify), for libFuzzer to mutate from. The files are tracked;
run this again (with the interop venv's python, which has `cryptography`)
only to change them:

    target/interop-venv/bin/python dataplane/fuzz/seeds/make.py
"""

import hashlib
import os
import struct

from cryptography.hazmat.primitives import hashes, poly1305, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = os.path.dirname(os.path.abspath(__file__))

# Must match the targets' constants.
KEY = bytes([0x42]) * 64
IV = bytes([0x24]) * 12
SESSION_ID = bytes([0x5A]) * 32


def u32(n):
    return struct.pack(">I", n)


def string(b):
    if isinstance(b, str):
        b = b.encode()
    return u32(len(b)) + b


def mpint(n):
    if n == 0:
        return string(b"")
    b = n.to_bytes((n.bit_length() + 8) // 8, "big")
    return string(b)


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- kexinit -------------------------------------------------------------

def kexinit(kex, host_key, ciphers, macs, follows=False):
    p = bytes([20]) + bytes(range(16))
    for names in (kex, host_key, ciphers, ciphers, macs, macs, ["none", "zlib@openssh.com"],
                  ["none", "zlib@openssh.com"], [], []):
        p += string(",".join(names))
    return p + bytes([1 if follows else 0]) + u32(0)


OPENSSH_KEX = ["mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com",
               "curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256",
               "ecdh-sha2-nistp384", "ecdh-sha2-nistp521", "diffie-hellman-group-exchange-sha256",
               "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512",
               "diffie-hellman-group14-sha256", "ext-info-c", "kex-strict-c-v00@openssh.com"]
OPENSSH_HOST = ["ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
                "ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256"]
OPENSSH_CIPHERS = ["chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr",
                   "aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
OPENSSH_MACS = ["umac-64-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
                "hmac-sha2-256", "hmac-sha1"]
OURS = ["mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org"]
OUR_CIPHERS = ["aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"]

write("kexinit", "openssh-client", kexinit(OPENSSH_KEX, OPENSSH_HOST, OPENSSH_CIPHERS, OPENSSH_MACS))
write("kexinit", "our-client", kexinit(OURS + ["kex-strict-c-v00@openssh.com"], ["ssh-ed25519"],
                                       OUR_CIPHERS, ["hmac-sha2-256-etm@openssh.com"]))
write("kexinit", "our-server", kexinit(OURS + ["kex-strict-s-v00@openssh.com", "ext-info-s"],
                                       ["ssh-ed25519"], OUR_CIPHERS, ["hmac-sha2-256-etm@openssh.com"]))
write("kexinit", "guess-follows", kexinit(["curve25519-sha256@libssh.org", "ecdh-sha2-nistp256"],
                                          ["rsa-sha2-256", "ssh-ed25519"], ["aes128-gcm@openssh.com"],
                                          ["hmac-sha2-256"], follows=True))

# --- packet ----------------------------------------------------------------

def body(payload, align, counted_extra):
    pad = align - (counted_extra + 1 + len(payload)) % align
    if pad < 4:
        pad += align
    return bytes([pad]) + payload + bytes(pad)


def none_packet(payload):
    b = body(payload, 8, 4)
    return u32(len(b)) + b


def gcm_packets(key_len, payloads):
    out = b""
    counter = int.from_bytes(IV[4:], "big")
    aead = AESGCM(KEY[:key_len])
    for p in payloads:
        b = body(p, 16, 0)
        head = u32(len(b))
        nonce = IV[:4] + counter.to_bytes(8, "big")
        out += head + aead.encrypt(nonce, b, head)
        counter = (counter + 1) % (1 << 64)
    return out


def chacha_packets(seq, payloads):
    out = b""
    main_key, length_key = KEY[:32], KEY[32:]

    def stream(key, block, seq, data):
        nonce = struct.pack("<Q", block) + struct.pack(">Q", seq)
        return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(data)

    for p in payloads:
        b = body(p, 8, 0)
        head = stream(length_key, 0, seq, u32(len(b)))
        enc = stream(main_key, 1, seq, b)
        poly_key = stream(main_key, 0, seq, bytes(32))
        out += head + enc + poly1305.Poly1305.generate_tag(poly_key, head + enc)
        seq += 1
    return out


PAYLOADS = [bytes([20]) + bytes(40), bytes([5]) + string("ssh-userauth"), b""]
write("packet", "none-stream", bytes([0]) + u32(0) + b"".join(none_packet(p) for p in PAYLOADS))
write("packet", "aes256-gcm-stream", bytes([1]) + u32(3) + gcm_packets(32, PAYLOADS))
write("packet", "aes128-gcm-stream", bytes([2]) + u32(3) + gcm_packets(16, PAYLOADS))
write("packet", "chacha-stream", bytes([3]) + u32(7) + chacha_packets(7, PAYLOADS))
for mode in range(4):
    write("packet", f"round-trip-{mode}", bytes([4 | mode]) + u32(0xFFFFFFFF) + bytes([0, 9, 1, 0, 3])
          + bytes([94]) + bytes(range(60)))


# --- userauth --------------------------------------------------------------

def ed25519_key():
    k = ed25519.Ed25519PrivateKey.generate()
    pub = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ssh-ed25519", string("ssh-ed25519") + string(pub), lambda d: k.sign(d)


def ecdsa_key(curve, name, ident, digest):
    k = ec.generate_private_key(curve)
    point = k.public_key().public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint)

    def sign(d):
        r, s = decode_dss_signature(k.sign(d, ec.ECDSA(digest)))
        return mpint(r) + mpint(s)

    return name, string(name) + string(ident) + string(point), sign


def rsa_key(name, digest, bits=2048):
    k = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    n = k.public_key().public_numbers()
    return name, string("ssh-rsa") + mpint(n.e) + mpint(n.n), \
        lambda d: k.sign(d, padding.PKCS1v15(), digest)


KEYS = [
    ed25519_key(),
    ecdsa_key(ec.SECP256R1(), "ecdsa-sha2-nistp256", "nistp256", hashes.SHA256()),
    ecdsa_key(ec.SECP384R1(), "ecdsa-sha2-nistp384", "nistp384", hashes.SHA384()),
    rsa_key("rsa-sha2-512", hashes.SHA512()),
    rsa_key("rsa-sha2-256", hashes.SHA256()),
]
ALGS = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "rsa-sha2-512", "rsa-sha2-256"]

for alg, blob, sign in KEYS:
    head = bytes([50]) + string("alice@01ac8894") + string("ssh-connection") + string("publickey")
    offer = head + bytes([0]) + string(alg) + string(blob)
    write("userauth", f"offer-{alg}", bytes([0]) + offer)
    signed = head + bytes([1]) + string(alg) + string(blob)
    sig = sign(string(SESSION_ID) + signed)
    write("userauth", f"signed-{alg}", bytes([0]) + signed + string(string(alg) + string(sig)))
    data = hashlib.sha256(alg.encode()).digest()
    sig_blob = string(alg) + string(sign(data))
    write("userauth", f"chosen-{alg}", bytes([1, ALGS.index(alg)]) + struct.pack(">HH", len(blob), len(sig_blob))
          + blob + sig_blob + data)
write("userauth", "none-method", bytes([0, 50]) + string("bob@01ac8894") + string("ssh-connection") + string("none"))
