import TesseraCore
import Testing

@Suite("ByteSize and Names")
struct ParsingTests {
    @Test(
        arguments: [
            ("1K", 1024), ("40G", 40 << 30), ("1t", 1 << 40), ("512", 512), ("2MiB", 2 << 20), ("0", 0),
            (" 8M ", 8 << 20), ("1P", 1 << 50), ("3kb", 3072), ("1B", 1), ("16383P", 16383 << 50),
        ] as [(String, UInt64)])
    func parsesValidSizes(text: String, bytes: UInt64) throws {
        #expect(try ByteSize.parse(text) == bytes)
    }

    @Test(arguments: [
        "", "   ", "-1", "abc", "1Q", "99999999999999999999", "1.5G", "K", "1 G", "0x10", "１K", "16384P", "1KK",
    ])
    func refusesInvalidSizes(text: String) {
        #expect(throws: ByteSize.ParseError.self, "'\(text)'") { _ = try ByteSize.parse(text) }
    }

    @Test func parseErrorsSayWhatIsWrong() {
        #expect(throws: ByteSize.ParseError.empty) { _ = try ByteSize.parse("") }
        #expect(throws: ByteSize.ParseError.overflow("16384P")) { _ = try ByteSize.parse("16384P") }
        #expect(throws: ByteSize.ParseError.notANumber("1.5G")) { _ = try ByteSize.parse("1.5G") }
    }

    @Test(
        arguments: [(0, "0"), (512, "512"), (1024, "1K"), (1536, "1.5K"), (40 << 30, "40G"), (1 << 50, "1P")]
            as [(UInt64, String)])
    func formatsSizes(bytes: UInt64, text: String) {
        #expect(ByteSize.format(bytes) == text)
    }

    @Test(arguments: [
        "vm1", "a b", "ünïcödé", "web-01_prod", "a.b", String(repeating: "x", count: 200), "img", "x.img2",
    ])
    func acceptsGoodNames(name: String) {
        #expect(Names.problem(with: name, what: "volume") == nil)
    }

    @Test(
        arguments: [
            ("", "empty"), (".", "reserved"), ("..", "reserved"), (".hidden", "start with '.'"), ("a/b", "'/'"),
            ("a\u{0}b", "NUL"), ("a\nb", "control"), ("tab\there", "control"), ("del\u{7f}", "control"),
            ("disk.img", ".img"), (String(repeating: "x", count: 201), "longer than"),
            (String(repeating: "é", count: 101), "longer than"),
        ] as [(String, String)])
    func refusesBadNamesWithAReason(name: String, reason: String) {
        let problem = Names.problem(with: name, what: "volume")
        #expect(problem != nil)
        #expect(problem?.contains(reason) == true, "\(problem ?? "nil") should mention \(reason)")
        #expect(problem?.hasPrefix("volume name") == true)
    }
}
