// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {DevToken} from "../../src/DevToken.sol";
import {ProviderStaking} from "../../src/ProviderStaking.sol";
import {LeaseEscrow} from "../../src/LeaseEscrow.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";
import {IProviderStaking} from "../../src/interfaces/IProviderStaking.sol";

/// @notice Shared deployment and signing helpers.
abstract contract Base is Test {
    uint256 internal constant PRICE = 1e12; // per GPU-second
    uint256 internal constant MIN_STAKE = 1_000 ether;
    uint64 internal constant UNBONDING = 7 days;
    uint16 internal constant FEE_BPS = 250;
    uint16 internal constant COLLATERAL_BPS = 2_000;
    uint16 internal constant LIVENESS_SLASH_BPS = 5_000;
    uint32 internal constant SETTLEMENT_WINDOW = 1 hours;
    uint32 internal constant DISPUTE_WINDOW = 30 minutes;
    uint32 internal constant LIVENESS_WINDOW = 10 minutes;
    uint16 internal constant WRONGED_BPS = 5_000;
    uint16 internal constant FINDER_BPS = 2_000;

    DevToken internal token;
    ProviderStaking internal staking;
    LeaseEscrow internal escrow;

    address internal owner = makeAddr("owner");
    address internal treasury = makeAddr("treasury");
    address internal stakingTreasury = makeAddr("stakingTreasury");
    uint256 internal providerKey = 0xA11CE;
    address internal provider;
    uint256 internal consumerKey = 0xB0B;
    address internal consumer;
    address internal stranger = makeAddr("stranger");

    bytes32 internal constant NODE_KEY = keccak256("node key");

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        provider = vm.addr(providerKey);
        consumer = vm.addr(consumerKey);
        vm.label(provider, "provider");
        vm.label(consumer, "consumer");
        token = _deployToken();
        staking =
            new ProviderStaking(IERC20(address(token)), stakingTreasury, MIN_STAKE, UNBONDING, WRONGED_BPS, FINDER_BPS);
        escrow = _deployEscrow();
        staking.setEscrow(address(escrow));
        _fundAndStake(provider, 100_000 ether);
        vm.prank(provider);
        staking.register(NODE_KEY, "ipfs://provider");
        _fund(consumer, 1_000_000 ether);
        vm.prank(consumer);
        token.approve(address(escrow), type(uint256).max);
    }

    /// @dev The payment and staking token; tests of unusual tokens override it.
    function _deployToken() internal virtual returns (DevToken) {
        return new DevToken();
    }

    function _config() internal view returns (ILeaseEscrow.Config memory) {
        return ILeaseEscrow.Config({
            treasury: treasury,
            feeBps: FEE_BPS,
            collateralBps: COLLATERAL_BPS,
            livenessSlashBps: LIVENESS_SLASH_BPS,
            settlementWindow: SETTLEMENT_WINDOW,
            disputeWindow: DISPUTE_WINDOW,
            livenessWindow: LIVENESS_WINDOW
        });
    }

    function _deployEscrow() internal returns (LeaseEscrow) {
        return new LeaseEscrow(IERC20(address(token)), IProviderStaking(address(staking)), owner, _config());
    }

    function _fund(address to, uint256 amount) internal {
        while (amount > 0) {
            uint256 chunk = amount > token.MAX_MINT_PER_CALL() ? token.MAX_MINT_PER_CALL() : amount;
            token.mint(to, chunk);
            amount -= chunk;
        }
    }

    function _fundAndStake(address who, uint256 amount) internal {
        _fund(who, amount);
        vm.startPrank(who);
        token.approve(address(staking), amount);
        staking.stake(amount);
        vm.stopPrank();
    }

    function _offer() internal view returns (ILeaseEscrow.Offer memory) {
        return ILeaseEscrow.Offer({
            provider: provider,
            nonce: 1,
            gpuModel: bytes32("H100-80GB"),
            gpuCount: 8,
            vramMiB: 81_920,
            pricePerGpuSecond: PRICE,
            minDuration: 60,
            maxDuration: 30 days,
            expiresAt: uint64(block.timestamp + 1 hours),
            specHash: keccak256("spec")
        });
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _digest(LeaseEscrow e, bytes32 structHash) internal view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", e.domainSeparator(), structHash));
    }

    function _signOffer(ILeaseEscrow.Offer memory o) internal view returns (bytes memory) {
        return _sign(providerKey, _digest(escrow, escrow.hashOffer(o)));
    }

    function _cp(uint256 leaseId, uint64 seq, uint64 cumulative)
        internal
        view
        returns (ILeaseEscrow.UsageCheckpoint memory)
    {
        return ILeaseEscrow.UsageCheckpoint({
            leaseId: leaseId,
            seq: seq,
            cumulativeGpuSeconds: cumulative,
            heartbeatHead: keccak256(abi.encode(leaseId, seq)),
            timestamp: uint64(block.timestamp)
        });
    }

    function _signCp(uint256 key, ILeaseEscrow.UsageCheckpoint memory cp) internal view returns (bytes memory) {
        return _sign(key, _digest(escrow, escrow.hashCheckpoint(cp)));
    }

    /// @dev Opens a lease of `gpus` GPUs for `duration` seconds of deposit on the default offer.
    function _open(uint32 gpus, uint256 duration) internal returns (uint256 leaseId) {
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        vm.prank(consumer);
        leaseId = escrow.openLease(o, sig, gpus, PRICE * gpus * duration);
    }

    function _settle(uint256 leaseId, uint64 seq, uint64 cumulative) internal {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, seq, cumulative);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        escrow.settle(leaseId, cp, sig);
    }
}
