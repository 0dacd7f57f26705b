// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {DevToken} from "../../src/DevToken.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";
import {BlocklistToken} from "../mocks/BlocklistToken.sol";
import {EscrowHandler} from "./EscrowHandler.sol";

contract EscrowInvariantTest is Base {
    EscrowHandler internal handler;
    /// @dev The handler's providers' stake before any slash (the first is also Base's provider).
    uint256 internal initialStake;

    /// @dev A token with an issuer blocklist, so that refunds and slash shares sometimes fail to transfer.
    function _deployToken() internal override returns (DevToken) {
        return new BlocklistToken();
    }

    function setUp() public override {
        super.setUp();
        handler = new EscrowHandler(BlocklistToken(address(token)), escrow, staking);
        address[2] memory ps = handler.providers();
        for (uint256 i; i < 2; ++i) {
            _fundAndStake(ps[i], 1_000_000 ether);
            vm.prank(ps[i]);
            staking.register(NODE_KEY, "");
        }
        initialStake = staking.stakeOf(ps[0]) + staking.stakeOf(ps[1]);
        // Every run starts with leases to act on, of both providers and all consumers.
        for (uint256 i; i < 6; ++i) {
            handler.open(i, i, i + 1, 3600 * (i + 1));
        }
        bytes4[] memory selectors = new bytes4[](20);
        selectors[0] = EscrowHandler.open.selector;
        selectors[1] = EscrowHandler.settle.selector;
        selectors[2] = EscrowHandler.topUp.selector;
        selectors[3] = EscrowHandler.close.selector;
        selectors[4] = EscrowHandler.finalize.selector;
        selectors[5] = EscrowHandler.withdrawEarnings.selector;
        selectors[6] = EscrowHandler.withdrawFees.selector;
        selectors[7] = EscrowHandler.warp.selector;
        selectors[8] = EscrowHandler.setFee.selector;
        selectors[9] = EscrowHandler.withdrawRefund.selector;
        selectors[10] = EscrowHandler.withdrawSlashProceeds.selector;
        selectors[11] = EscrowHandler.setBlocked.selector;
        selectors[12] = EscrowHandler.challenge.selector;
        selectors[13] = EscrowHandler.answer.selector;
        selectors[14] = EscrowHandler.resolve.selector;
        selectors[15] = EscrowHandler.claim.selector;
        selectors[16] = EscrowHandler.dispute.selector;
        selectors[17] = EscrowHandler.finalizeClaim.selector;
        selectors[18] = EscrowHandler.reportEquivocation.selector;
        selectors[19] = EscrowHandler.open.selector; // opens twice as often: leases to act on
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
        targetContract(address(handler));
    }

    /// @dev The escrow's token balance == unpaid deposits of unfinalized leases + their fees not yet accrued
    /// (paid - provider share) + unwithdrawn earnings + unwithdrawn (accrued) fees + refunds credited to consumers
    /// whose transfer failed.
    function invariant_Conservation() public view {
        uint256 owed;
        uint256 n = handler.leaseCount();
        for (uint256 i; i < n; ++i) {
            uint256 id = handler.leaseIds(i);
            ILeaseEscrow.Lease memory l = escrow.getLease(id);
            if (l.status != ILeaseEscrow.LeaseStatus.Finalized) owed += l.deposit - l.paid + handler.feesOf(id, l);
        }
        address[2] memory ps = handler.providers();
        owed += escrow.earnings(ps[0]) + escrow.earnings(ps[1]) + escrow.accruedFees();
        address[6] memory rs = handler.recipients();
        for (uint256 i; i < 3; ++i) {
            owed += escrow.refunds(rs[i]);
        }
        assertEq(token.balanceOf(address(escrow)), owed);
    }

    /// @dev The staking contract's token balance == the stakes + slash shares credited but not yet withdrawn, and
    /// the providers lost exactly what was slashed.
    function invariant_StakingConservation() public view {
        address[2] memory ps = handler.providers();
        uint256 held = staking.stakeOf(ps[0]) + staking.stakeOf(ps[1]);
        address[6] memory rs = handler.recipients();
        for (uint256 i; i < 6; ++i) {
            held += staking.slashProceeds(rs[i]);
        }
        assertEq(token.balanceOf(address(staking)), held);
        assertEq(initialStake - staking.stakeOf(ps[0]) - staking.stakeOf(ps[1]), handler.ghostSlashed());
    }

    /// @dev Every slash was the amount due on the collateral at stake at the fault: a liveness slash on the
    /// deposit at the challenge, an equivocation on the opening deposit; and a dispute raised the disputed seq.
    function invariant_SlashOnStakeAtFault() public view {
        assertFalse(handler.slashMismatch());
    }

    /// @dev Accrued + withdrawn fees == the fees of finalized leases, each at the rate of its open.
    function invariant_FeesOfFinalizedLeases() public view {
        uint256 sum;
        uint256 n = handler.leaseCount();
        for (uint256 i; i < n; ++i) {
            uint256 id = handler.leaseIds(i);
            ILeaseEscrow.Lease memory l = escrow.getLease(id);
            if (l.status == ILeaseEscrow.LeaseStatus.Finalized) sum += handler.feesOf(id, l);
        }
        assertEq(escrow.accruedFees() + handler.ghostFeesWithdrawn(), sum);
    }

    /// @dev paid <= deposit and paid <= price * gpus * paid-through elapsed time, per lease.
    function invariant_PaidBounded() public view {
        uint256 n = handler.leaseCount();
        for (uint256 i; i < n; ++i) {
            ILeaseEscrow.Lease memory l = escrow.getLease(handler.leaseIds(i));
            assertLe(l.paid, l.deposit);
            uint256 end = l.endsAt;
            if (l.closedAt != 0 && l.closedAt < end) end = l.closedAt;
            if (block.timestamp < end) end = block.timestamp;
            assertLe(l.paid, l.pricePerGpuSecond * l.gpus * (end - l.startedAt));
        }
    }

    /// @dev The providers' locked stake is exactly the collateral of their unfinalized leases.
    function invariant_LockedCollateral() public view {
        address[2] memory ps = handler.providers();
        uint256[2] memory sums;
        uint256 n = handler.leaseCount();
        for (uint256 i; i < n; ++i) {
            ILeaseEscrow.Lease memory l = escrow.getLease(handler.leaseIds(i));
            if (l.status == ILeaseEscrow.LeaseStatus.Finalized) continue;
            sums[l.provider == ps[0] ? 0 : 1] += l.collateral;
        }
        assertEq(staking.lockedStake(ps[0]), sums[0]);
        assertEq(staking.lockedStake(ps[1]), sums[1]);
    }

    /// @dev A finalized lease holds nothing: no pending claim, its GPUs released (each lease has its own offer),
    /// and (with the two invariants above) neither tokens in the escrow nor stake locked.
    function invariant_NoLockedFundsAfterFinalize() public view {
        uint256 n = handler.leaseCount();
        for (uint256 i; i < n; ++i) {
            uint256 id = handler.leaseIds(i);
            ILeaseEscrow.Lease memory l = escrow.getLease(id);
            if (l.status != ILeaseEscrow.LeaseStatus.Finalized) continue;
            assertEq(escrow.getClaim(id).readyAt, 0);
            assertEq(escrow.offerGpusInUse(l.offerHash), 0);
        }
    }

    /// @dev Lease status never moves backwards.
    function invariant_StatusMonotonic() public {
        handler.observeAll();
        assertFalse(handler.statusWentBack());
    }

    /// @dev At the end of each run every lease can be ended and every balance withdrawn, whatever happened:
    /// the escrow is left empty, no stake is locked, and the staking contract holds exactly the stakes.
    function afterInvariant() public {
        handler.drain();
        assertEq(token.balanceOf(address(escrow)), 0);
        address[2] memory ps = handler.providers();
        assertEq(staking.lockedStake(ps[0]) + staking.lockedStake(ps[1]), 0);
        assertEq(token.balanceOf(address(staking)), staking.stakeOf(ps[0]) + staking.stakeOf(ps[1]));
        assertFalse(handler.slashMismatch());
    }
}
