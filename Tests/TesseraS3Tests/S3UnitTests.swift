// Offline tests of the S3 pieces that need no server: SigV4 against AWS's published examples, URL
// parsing, credentials files and their redaction, the listing XML, and the retry policy.

import Foundation
import TesseraCore
import TesseraStores
import Testing

@testable import TesseraS3

#if canImport(Glibc)
    import Glibc
#endif

@Suite("SigV4")
struct SigV4Tests {
    // The examples of "Signature Calculations for the Authorization Header: Transferring Payload in a
    // Single Chunk" (Amazon S3 API reference), bucket examplebucket, 2013-05-24T00:00:00Z.
    static let signer = SigV4(
        credentials: S3Credentials(
            accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        region: "us-east-1")
    static let date = Date(timeIntervalSince1970: 1_369_353_600)
    static let host = ("host", "examplebucket.s3.amazonaws.com")

    func authorization(_ headers: [(String, String)]) -> String {
        headers.first { $0.0 == "Authorization" }!.1
    }

    @Test func getObjectWithRange() {
        let added = Self.signer.sign(
            method: "GET", canonicalPath: "/test.txt", query: [], headers: [Self.host, ("range", "bytes=0-9")],
            payloadHash: SigV4.emptyPayloadHash, date: Self.date)
        #expect(
            authorization(added)
                == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        #expect(added.contains { $0 == ("x-amz-date", "20130524T000000Z") })
        #expect(added.contains { $0 == ("x-amz-content-sha256", SigV4.emptyPayloadHash) })
    }

    @Test func putObject() {
        let body = Array("Welcome to Amazon S3.".utf8)
        let hash = body.withUnsafeBytes(SigV4.payloadHash)
        #expect(hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let added = Self.signer.sign(
            method: "PUT", canonicalPath: "/" + SigV4.uriEncode("test$file.text", keepSlash: true), query: [],
            headers: [
                Self.host, ("date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ],
            payloadHash: hash, date: Self.date)
        #expect(
            authorization(added).hasSuffix(
                "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,"
                    + "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"))
    }

    @Test func getBucketLifecycle() {
        let added = Self.signer.sign(
            method: "GET", canonicalPath: "/", query: [("lifecycle", "")], headers: [Self.host],
            payloadHash: SigV4.emptyPayloadHash, date: Self.date)
        #expect(
            authorization(added).hasSuffix(
                "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"))
    }

    @Test func listObjects() {
        let added = Self.signer.sign(
            method: "GET", canonicalPath: "/", query: [("prefix", "J"), ("max-keys", "2")], headers: [Self.host],
            payloadHash: SigV4.emptyPayloadHash, date: Self.date)
        #expect(
            authorization(added).hasSuffix(
                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"))
    }

    @Test func sessionTokenIsSentAndSigned() {
        let signer = SigV4(
            credentials: S3Credentials(accessKeyID: "AKID", secretAccessKey: "s", sessionToken: "TOKEN"),
            region: "us-east-1")
        let added = signer.sign(
            method: "GET", canonicalPath: "/b/k", query: [], headers: [("host", "h")],
            payloadHash: SigV4.emptyPayloadHash, date: Self.date)
        #expect(added.contains { $0 == ("x-amz-security-token", "TOKEN") })
        #expect(
            authorization(added).contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"))
        #expect(!authorization(added).contains("TOKEN"))
    }

    @Test func contentMD5AndEncoding() {
        let md5 = Array("hello".utf8).withUnsafeBytes(SigV4.contentMD5)
        #expect(md5 == "XUFAKrxLKna5cZ2REBfFkg==")
        #expect(SigV4.uriEncode("a b/c~d*é", keepSlash: true) == "a%20b/c~d%2A%C3%A9")
        #expect(SigV4.uriEncode("a/b", keepSlash: false) == "a%2Fb")
        #expect(
            SigV4.canonicalQuery([("prefix", "p/"), ("list-type", "2"), ("a", "")]) == "a=&list-type=2&prefix=p%2F")
    }
}

@Suite("S3Endpoint")
struct S3EndpointTests {
    @Test func parsesPathStyleURLs() throws {
        let e = try S3Endpoint(url: "http://127.0.0.1:7480/tessera-test/some/prefix/", environment: [:])
        #expect(e.scheme == "http" && e.host == "127.0.0.1" && e.port == 7480)
        #expect(e.bucket == "tessera-test" && e.prefix == "some/prefix")
        #expect(e.region == "us-east-1" && e.style == .path)
        #expect(e.key("chunks/x") == "some/prefix/chunks/x")
        #expect(e.url(key: "some/prefix/k", encodedQuery: "") == "http://127.0.0.1:7480/tessera-test/some/prefix/k")
        #expect(e.description == "http://127.0.0.1:7480/tessera-test/some/prefix")
        let bare = try S3Endpoint(url: "https://s3.example.com/bkt", environment: ["AWS_REGION": "eu-west-3"])
        #expect(bare.port == 443 && bare.prefix == "" && bare.region == "eu-west-3")
        #expect(bare.key("chunks/") == "chunks/")
        #expect(try S3Endpoint(url: "http://[::1]:9000/bkt", environment: [:]).host == "[::1]")
        #expect(
            try S3Endpoint(url: "http://h/bkt", region: "ap-south-1", environment: ["AWS_REGION": "x"]).region
                == "ap-south-1")
    }

    @Test func virtualHostStylePutsTheBucketInTheHost() throws {
        let e = try S3Endpoint(url: "http://s3.local:9000/bkt/p", style: .virtualHost, environment: [:])
        #expect(e.url(key: "p/k", encodedQuery: "list-type=2") == "http://bkt.s3.local:9000/p/k?list-type=2")
        #expect(e.canonicalPath(key: nil) == "/")
        #expect(e.authority == "bkt.s3.local:9000")
    }

    @Test(arguments: [
        ("ftp://h/b", "scheme"), ("http://h", "no bucket"), ("http://h/", "no bucket"), ("http://:80/bkt", "no host"),
        ("http://h:0/bkt", "port"), ("http://h:99999/bkt", "port"), ("http://h:x/bkt", "port"),
        ("http://key:secret@h/bkt", "credentials"), ("http://h/Bad_Bucket", "bucket"), ("http://h/ab", "bucket"),
        ("http://h/bkt//p", "segment"), ("http://h/bkt/../p", "segment"), ("http://h/bkt?x=1", "query"),
        ("http://h/bkt/p q", "prefix"),
    ])
    func refusesBadURLs(url: String, why: String) {
        #expect {
            _ = try S3Endpoint(url: url, environment: [:])
        } throws: { error in
            let text = "\(error)"
            return text.contains(why) && text.contains("bad S3 URL") && !text.contains("secret@")
                || (why == "credentials" && text.contains("credentials do not belong"))
        }
    }
}

@Suite("S3Credentials")
struct S3CredentialsTests {
    static let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

    func tempPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("tessera-creds-\(UUID().uuidString)").path
    }

    @Test func descriptionsNeverShowTheSecret() {
        let c = S3Credentials(accessKeyID: "AKIAEXAMPLE", secretAccessKey: Self.secret, sessionToken: "TOKEN123")
        for text in ["\(c)", String(describing: c), String(reflecting: c), "\([c])"] {
            #expect(!text.contains(Self.secret) && !text.contains("TOKEN123"), "\(text)")
            #expect(text.contains("AKIAEXAMPLE") && text.contains("redacted"))
        }
    }

    @Test func environment() throws {
        let c = try S3Credentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S"])
        #expect(c == S3Credentials(accessKeyID: "A", secretAccessKey: "S"))
        #expect(throws: StoreSetupError.self) { try S3Credentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "A"]) }
        let t = try S3Credentials.fromEnvironment(
            ["AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S", "AWS_SESSION_TOKEN": "T"])
        #expect(t.sessionToken == "T")
    }

    @Test func writeCreatesA0600FileThatLoadsBack() throws {
        let path = tempPath()
        defer { unlink(path) }
        let c = S3Credentials(accessKeyID: "AKID", secretAccessKey: Self.secret, sessionToken: "TOK")
        let old = umask(0)
        defer { umask(old) }
        try c.write(to: path)
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
        #expect(try S3Credentials.load(from: path) == c)
        try S3Credentials(accessKeyID: "B", secretAccessKey: "S2").write(to: path)  // replaces
        #expect(try S3Credentials.load(from: path).accessKeyID == "B")
    }

    @Test func refusesFilesOthersCanRead() throws {
        let path = tempPath()
        defer { unlink(path) }
        try S3Credentials(accessKeyID: "AKID", secretAccessKey: Self.secret).write(to: path)
        for mode: mode_t in [0o640, 0o604, 0o660] {
            chmod(path, mode)
            #expect {
                _ = try S3Credentials.load(from: path)
            } throws: { e in
                "\(e)".contains("chmod 600") && !"\(e)".contains(Self.secret)
            }
        }
        chmod(path, 0o400)
        #expect(try S3Credentials.load(from: path).accessKeyID == "AKID")
        let link = path + ".link"
        symlink(path, link)
        defer { unlink(link) }
        #expect { _ = try S3Credentials.load(from: link) } throws: { "\($0)".contains("symbolic link") }
        #expect { _ = try S3Credentials.load(from: "/tmp") } throws: { "\($0)".contains("not a regular file") }
    }

    @Test func parseErrorsNameTheLineNotTheValue() {
        #expect {
            _ = try S3Credentials.parse("access_key_id = A\nsecret_access_key = \(Self.secret)\nbogus", source: "f")
        } throws: { "\($0)".contains("line 3") && !"\($0)".contains(Self.secret) }
        #expect { _ = try S3Credentials.parse("access_key_id = A\n", source: "f") } throws: {
            "\($0)".contains("no secret_access_key")
        }
        #expect { _ = try S3Credentials.parse("acces_key_id = \(Self.secret)\n", source: "f") } throws: {
            "\($0)".contains("unknown name \"acces_key_id\"") && !"\($0)".contains(Self.secret)
        }
        #expect(
            (try? S3Credentials.parse("# c\n\n access_key_id=A \nsecret_access_key = S=x\n", source: "f"))
                == S3Credentials(accessKeyID: "A", secretAccessKey: "S=x"))
    }
}

@Suite("S3 XML and retry policy")
struct S3XMLTests {
    @Test func listingWithEscapedKeysAndAContinuationToken() throws {
        let xml = """
            <?xml version="1.0" encoding="UTF-8"?>
            <ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix>
            <KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>
            <Contents><Key>p/a&amp;b&lt;c&gt;&quot;&apos;&#65;&#x42;</Key><LastModified>x</LastModified><Size>12</Size></Contents>
            <Contents><Key>p/chunks/0000000000000001</Key><Size>0</Size></Contents>
            <NextContinuationToken>1/tok&amp;en==</NextContinuationToken></ListBucketResult>
            """
        let page = try #require(S3XML.listPage(xml))
        #expect(
            page.objects == [
                S3Object(key: "p/a&b<c>\"'AB", size: 12), S3Object(key: "p/chunks/0000000000000001", size: 0),
            ])
        #expect(page.continuationToken == "1/tok&en==")
        let last = try #require(S3XML.listPage("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"))
        #expect(last.objects.isEmpty && last.continuationToken == nil)
        #expect(S3XML.listPage("<Error><Code>AccessDenied</Code></Error>") == nil)
        #expect(S3XML.unescape("&bogus; & &amp") == "&bogus; & &amp")
    }

    @Test func errorBodies() {
        let e = S3XML.error(
            "<?xml?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>")
        #expect(e?.code == "NoSuchKey" && e?.message == "The specified key does not exist.")
    }

    @Test func onlyTransientFailuresAreRetried() {
        for s in [500, 502, 503, 504, 429] {
            #expect(S3Client.isRetryable(.status(s, code: nil, message: nil)), "\(s)")
        }
        #expect(S3Client.isRetryable(.status(503, code: "SlowDown", message: nil)))
        for s in [400, 401, 403, 404, 409, 412, 416, 501, 507] {
            #expect(!S3Client.isRetryable(.status(s, code: nil, message: nil)), "\(s)")
        }
        #expect(S3Client.isRetryable(.connect("refused")) && S3Client.isRetryable(.timeout("t")))
        #expect(!S3Client.isRetryable(.tls("bad certificate")) && !S3Client.isRetryable(.protocolError("x")))
    }

    @Test func chunkKeysRoundTripAndForeignKeysAreIgnored() {
        let p = "pre/chunks/"
        #expect(S3Store.chunk(fromKey: p + "00000000000000ff", prefix: p) == ChunkID(255))
        #expect(S3Store.chunk(fromKey: p + "00000000000000FF", prefix: p) == nil)
        #expect(S3Store.chunk(fromKey: p + "ff", prefix: p) == nil)
        #expect(S3Store.chunk(fromKey: p + "0000000000000000", prefix: p) == nil)
        #expect(S3Store.chunk(fromKey: "other/00000000000000ff", prefix: p) == nil)
        let label = ChunkLabel(volume: VolumeID(42), index: 1 << 40, epoch: 7)
        #expect(S3Store.encode(label) == "42.1099511627776.7")
        #expect(S3Store.decode(S3Store.encode(label)) == label)
        #expect(S3Store.decode("1.2") == nil && S3Store.decode("a.b.c") == nil)
    }
}
