import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// Thrown by ``poll(what:timeout:sourceLocation:until:)`` at its deadline, after it recorded the issue.
public struct PollTimedOut: Error, CustomStringConvertible {
    public var description: String
}

/// Evaluates `condition` every 0.1 s until it holds. When it still does not hold after `timeout`
/// seconds, the test fails: an issue saying what never happened (`what`, evaluated then, so it can
/// show the last state seen) is recorded at the caller, and ``PollTimedOut`` is thrown so that the
/// caller stops there.
///
///     try poll(what: "the insert is in the log", timeout: 10) { try ws.rowEvents(table: "facilities").count == 1 }
public func poll(what: @autoclosure () -> String, timeout: Double = 30, sourceLocation: SourceLocation = #_sourceLocation,
                 until condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if try condition() { return }
        if Date() >= deadline { break }
        usleep(100_000)
    }
    let message = "gave up after \(timeout) s waiting for: \(what())"
    Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
    throw PollTimedOut(description: message)
}
