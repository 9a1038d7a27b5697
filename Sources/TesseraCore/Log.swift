import Foundation

/// One line per event on stderr (the daemon's log), with a UTC timestamp.
public enum Log {
    public static func info(_ message: @autoclosure () -> String) { emit("info", message()) }
    public static func error(_ message: @autoclosure () -> String) { emit("error", message()) }

    private static func emit(_ level: String, _ message: String) {
        let line = "\(Date().ISO8601Format()) tessera[\(getpid())] \(level): \(message)\n"
        FileHandle.standardError.write(line.data(using: .utf8)!)
    }
}
