/** The optional `nfqueue` binding (GPL-2.0, nan; docs/packets.md). Only what sandgate uses. */
declare module 'nfqueue' {
  export interface NfPacketInfo {
    readonly len: number;
    readonly id: number;
    readonly nfmark: number;
    readonly indev: number;
    readonly indev_name: string;
  }
  export interface NfPacket {
    readonly info: NfPacketInfo;
    readonly payload: Buffer;
    /** A non-zero mark replaces the packet's mark (nfq_set_verdict2). */
    setVerdict(verdict: number, mark?: number): void;
  }
  export interface NfQueue {
    readonly opened: boolean;
  }
  export const NF_DROP: number;
  export const NF_ACCEPT: number;
  export function createQueueHandler(num: number, bufferSize: number, callback: (packet: NfPacket) => void): NfQueue;
}
