//! The pod's egress limit on the userspace datapath: a root TBF qdisc on the pod end, set,
//! removed and read back over rtnetlink inside the pod netns. The crate does not model TBF's
//! options, so they are encoded and decoded here (`linux/pkt_sched.h`). Also the kind of a
//! node link's root qdisc, to see whether ovs-vswitchd installed the one a QoS row asks for.
//! The OVS side of pod limits is `ovn::vswitch`; choosing when to shape is `node/qos.rs`.

use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, Nla, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::Handle;

use super::netns::PodNetns;
use super::{nl_err, NetlinkError};

/// Kernel TBF attributes and constants (`linux/pkt_sched.h`).
const TCA_OPTIONS: u16 = 2;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// `PSCHED_SHIFT`: the kernel's scheduler ticks are 64 ns.
const PSCHED_SHIFT: u32 = 6;
const TBF: &str = "tbf";

/// `TCA_OPTIONS` of a token bucket shaping to `mbps`: a burst of 10 ms of traffic (at least
/// 16 KiB, so GSO-sized packets pass) and 50 ms of queue.
fn tbf_options(mbps: u64) -> Vec<TcOption> {
    let rate = mbps.saturating_mul(125_000); // bytes/s
    let burst = (rate / 100).clamp(16 * 1024, 64 << 20);
    let limit = (burst + rate / 20).min(u64::from(u32::MAX)) as u32;
    let burst_ticks = ((burst as u128 * 1_000_000_000 / u128::from(rate.max(1))) >> PSCHED_SHIFT)
        .min(u128::from(u32::MAX)) as u32;
    let ratespec = |r: u32| {
        // struct tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate
        let mut b = vec![0u8, TC_LINKLAYER_ETHERNET];
        b.extend(0u16.to_ne_bytes());
        b.extend(0i16.to_ne_bytes());
        b.extend(0u16.to_ne_bytes());
        b.extend(r.to_ne_bytes());
        b
    };
    // struct tc_tbf_qopt: rate, peakrate, limit, buffer, mtu
    let mut parms = ratespec(rate.min(u64::from(u32::MAX)) as u32);
    parms.extend(ratespec(0));
    parms.extend(limit.to_ne_bytes());
    parms.extend(burst_ticks.to_ne_bytes());
    parms.extend(0u32.to_ne_bytes());
    let mut options = vec![
        TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, parms)),
        TcOption::Other(DefaultNla::new(
            TCA_TBF_BURST,
            (burst as u32).to_ne_bytes().to_vec(),
        )),
    ];
    if rate > u64::from(u32::MAX) {
        options.push(TcOption::Other(DefaultNla::new(
            TCA_TBF_RATE64,
            rate.to_ne_bytes().to_vec(),
        )));
    }
    options
}

/// Shapes what the pod sends on `ifname` to `mbps` with a root TBF qdisc on the pod end, or
/// removes that qdisc (`None`). This is the pod's egress limit on the userspace datapath, where
/// OVS's ingress policing on the host end never sees the packets (OVS reads them from an
/// AF_PACKET socket, which the kernel serves before the ingress qdisc).
pub async fn set_pod_egress_limit(
    pod_netns: &Path,
    ifname: &str,
    mbps: Option<u64>,
) -> Result<(), NetlinkError> {
    let pod = PodNetns::enter(pod_netns).await?;
    let index = pod.link_index(ifname).await? as i32;
    let object = pod.object(ifname);
    match mbps {
        Some(mbps) => {
            let mut msg = TcMessage::with_index(index);
            msg.header.parent = TcHandle::ROOT;
            msg.header.handle = TcHandle { major: 1, minor: 0 };
            msg.attributes.push(TcAttribute::Kind(TBF.to_string()));
            msg.attributes.push(TcAttribute::Options(tbf_options(mbps)));
            let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
            req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
            let mut handle = pod.handle.clone();
            let mut responses = handle
                .request(req)
                .map_err(nl_err("shape egress of", object.clone()))?;
            while let Some(m) = responses.next().await {
                if let NetlinkPayload::Error(e) = m.payload {
                    if e.code.is_some() {
                        return Err(nl_err("shape egress of", object)(
                            rtnetlink::Error::NetlinkError(e),
                        ));
                    }
                }
            }
            Ok(())
        }
        None => {
            if root_tbf(&pod.handle, index, &object).await?.is_none() {
                return Ok(());
            }
            let mut del = pod.handle.qdisc().del(index);
            del.message_mut().header.parent = TcHandle::ROOT;
            del.execute()
                .await
                .map_err(nl_err("remove egress shaping of", object))
        }
    }
}

impl super::Netlink {
    /// The kind (`netem`, `htb`, …) of the root qdisc of link `ifname` in the node's netns;
    /// `None` if the link has none or is gone.
    pub async fn root_qdisc_kind(&self, ifname: &str) -> Result<Option<String>, NetlinkError> {
        let Some(index) = self.link_index(ifname).await? else {
            return Ok(None);
        };
        let root = root_qdisc(&self.handle, index as i32, &format!("link {ifname}")).await?;
        Ok(root.and_then(|q| {
            q.attributes.into_iter().find_map(|a| match a {
                TcAttribute::Kind(kind) => Some(kind),
                _ => None,
            })
        }))
    }
}

/// The payload of attribute `kind` in a buffer of netlink attributes.
fn nested_attribute(buf: &[u8], kind: u16) -> Option<Vec<u8>> {
    let mut rest = buf;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let this = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if this == kind {
            return Some(rest[4..len].to_vec());
        }
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    None
}

/// The root qdisc of link `index`, if there is one.
async fn root_qdisc(
    handle: &Handle,
    index: i32,
    object: &str,
) -> Result<Option<TcMessage>, NetlinkError> {
    let qdiscs: Vec<TcMessage> = handle
        .clone()
        .qdisc()
        .get()
        .index(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list qdiscs of", object))?;
    Ok(qdiscs
        .into_iter()
        .find(|q| q.header.index == index && q.header.parent == TcHandle::ROOT))
}

/// The root TBF qdisc of link `index`, if there is one.
async fn root_tbf(
    handle: &Handle,
    index: i32,
    object: &str,
) -> Result<Option<TcMessage>, NetlinkError> {
    Ok(root_qdisc(handle, index, object)
        .await?
        .filter(|q| q.attributes.contains(&TcAttribute::Kind(TBF.to_string()))))
}

/// The pod end's egress limit in Mbit/s, if a TBF we set is there (for tests and CHECK).
pub async fn pod_egress_limit(pod_netns: &Path, ifname: &str) -> Result<Option<u64>, NetlinkError> {
    let pod = PodNetns::enter(pod_netns).await?;
    let index = pod.link_index(ifname).await? as i32;
    let object = pod.object(ifname);
    let Some(q) = root_tbf(&pod.handle, index, &object).await? else {
        return Ok(None);
    };
    // The options of a qdisc kind the crate does not model come back as one raw TCA_OPTIONS
    // (or as its raw attributes): find TCA_TBF_PARMS in either form.
    let raw: Vec<(u16, Vec<u8>)> = q
        .attributes
        .iter()
        .filter_map(|a| match a {
            TcAttribute::Options(opts) => Some(opts),
            _ => None,
        })
        .flatten()
        .filter_map(|o| match o {
            TcOption::Other(nla) => {
                let mut value = vec![0u8; nla.value_len()];
                nla.emit_value(&mut value);
                Some((nla.kind(), value))
            }
            _ => None,
        })
        .collect();
    let parms = raw.iter().find_map(|(kind, value)| match *kind {
        TCA_TBF_PARMS => Some(value.clone()),
        TCA_OPTIONS => nested_attribute(value, TCA_TBF_PARMS),
        _ => None,
    });
    // tc_tbf_qopt starts with the rate's tc_ratespec, whose rate (bytes/s) is at offset 8.
    Ok(parms
        .and_then(|p| p.get(8..12).map(|r| [r[0], r[1], r[2], r[3]]))
        .map(|r| u64::from(u32::from_ne_bytes(r)) / 125_000))
}
