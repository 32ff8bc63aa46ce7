import Synchronization

/// A flag the service sets to ask the capture thread to stop after its current batch.
public final class StopSignal: Sendable {
    private let flag = Atomic<Bool>(false)

    public init() {}

    /// Asks capture to finish its batch, confirm it and return.
    public func stop() { flag.store(true, ordering: .releasing) }

    /// True once ``stop()`` was called.
    public var isStopped: Bool { flag.load(ordering: .acquiring) }
}
