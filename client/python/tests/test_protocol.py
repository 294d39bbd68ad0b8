# SPDX-License-Identifier: MIT
"""memguard.protocol against the bytes of docs/protocol.md."""
import struct
import unittest

from memguard import protocol

import fake


class ProtocolTest(unittest.TestCase):
    def test_golden_hello(self):
        # docs/protocol.md section 9, byte for byte.
        golden = bytes.fromhex(
            "01 00 01 00 15 00 00 00 01 00 00 00 00 00 00 00"
            "0b 00 00 00 03 00 77 65 62 0a 00 61 70 69 2d 73"
            "65 72 76 65 72")
        self.assertEqual(protocol.encode_hello(1, 0x0B, b"web", b"api-server"), golden)

    def test_client_messages_as_a_daemon_reads_them(self):
        t, seq, r = fake.parse(protocol.encode_report(3, 1, 2, 3, 4, 5, 6, 7, 8, 80))
        self.assertEqual((t, seq), (0x0002, 3))
        self.assertEqual(list(r.values()), [1, 2, 3, 4, 5, 6, 7, 8, 80])
        t, seq, r = fake.parse(protocol.encode_released(4, 99, 2 ** 40, 1234))
        self.assertEqual((t, r), (0x0003, {"directive_seq": 99, "bytes": 2 ** 40, "usec": 1234}))
        self.assertEqual(fake.parse(protocol.encode_pong(5, 2 ** 63))[2], {"cookie": 2 ** 63})
        self.assertEqual(fake.parse(protocol.encode_bye(6))[2], {"reason": 0})
        # Figures beyond a field's width are clamped, never wrapped.
        r = fake.parse(protocol.encode_report(1, 2 ** 70, -5, 0, 0, 0, 0, 0, 0, 10 ** 6))[2]
        self.assertEqual((r["heap_sys"], r["heap_inuse"], r["gc_percent"]),
                         (2 ** 64 - 1, 0, 65535))
        with self.assertRaises(ValueError):
            protocol.encode_hello(1, 0, b"caf\xc3\xa9", b"")
        with self.assertRaises(ValueError):
            protocol.encode_hello(1, 0, b"x" * 256, b"")

    def test_welcome_new_layout(self):
        m = protocol.decode(fake.welcome(9, client_id=5, budget=2 ** 33, interval_ms=250,
                                         service=b"web"))
        self.assertEqual((m.type, m.seq), (protocol.WELCOME, 9))
        self.assertEqual(m.body, protocol.Welcome(5, 2 ** 33, 250, "web"))
        # Fields appended by a later revision are ignored.
        longer = fake.welcome(9, service=b"web")[16:] + b"\1\2\3\4"
        self.assertEqual(protocol.decode(fake.pack(0x0101, 9, longer)).body.service, "web")
        # Ending inside the service is malformed.
        short = fake.welcome(9, service=b"web")[16:-1]
        with self.assertRaises(protocol.MalformedError):
            protocol.decode(fake.pack(0x0101, 9, short))

    def test_directive(self):
        m = protocol.decode(fake.directive(77, level=3, gc=25, throttle=1000, soft=10,
                                           release=2 ** 64 - 1, deadline=500))
        self.assertEqual(m.body, protocol.Directive(3, 25, 1000, 10, 2 ** 64 - 1, 500))
        body = fake.directive(1)[16:] + b"more"
        self.assertEqual(protocol.decode(fake.pack(0x0102, 1, body)).body,
                         protocol.NORMAL_DIRECTIVE)
        for bad in (fake.directive(1, level=4), fake.directive(1, throttle=1001),
                    fake.pack(0x0102, 1, fake.directive(1)[16:-1])):
            with self.assertRaises(protocol.MalformedError):
                protocol.decode(bad)

    def test_error_ping_bye(self):
        self.assertEqual(protocol.decode(fake.error(3, 12, b"\x01odd")).body,
                         protocol.Error(12, "\x01odd"))
        self.assertEqual(protocol.decode(fake.ping(4, 2 ** 64 - 1)).body, 2 ** 64 - 1)
        self.assertEqual(protocol.decode(fake.bye(5, 7)).body, 7)
        too_long = struct.pack("<I", 1) + struct.pack("<H", 1025) + b"a" * 1025
        for bad in (fake.pack(0x0104, 1, too_long), b"", b"\0" * 15,
                    fake.pack(0x0103, 1, b"\0" * 8, length=7),
                    fake.pack(0x0103, 1, b"\0" * 8, version=0),
                    fake.pack(0x0201, 1, b"")):
            with self.assertRaises(protocol.MalformedError):
                protocol.decode(bad)


if __name__ == "__main__":
    unittest.main()
