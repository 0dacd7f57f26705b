// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";
import {EscrowHandler} from "./EscrowHandler.sol";

contract EscrowInvariantTest is Base {
    EscrowHandler internal handler;

    function setUp() public override {
        super.setUp();
        handler = new EscrowHandler(token, escrow);
        address[2] memory ps = handler.providers();
        for (uint256 i; i < 2; ++i) {
            _fundAndStake(ps[i], 1_000_000 ether);
            vm.prank(ps[i]);
            staking.register(NODE_KEY, "");
        }
        bytes4[] memory selectors = new bytes4[](9);
        selectors[0] = EscrowHandler.open.selector;
        selectors[1] = EscrowHandler.settle.selector;
        selectors[2] = EscrowHandler.topUp.selector;
        selectors[3] = EscrowHandler.close.selector;
        selectors[4] = EscrowHandler.finalize.selector;
        selectors[5] = EscrowHandler.withdrawEarnings.selector;
        selectors[6] = EscrowHandler.withdrawFees.selector;
        selectors[7] = EscrowHandler.warp.selector;
        selectors[8] = EscrowHandler.setFee.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
        targetContract(address(handler));
    }

    /// @dev token balance == unpaid deposits of unfinalized leases + their fees not yet accrued (paid - provider
    /// share) + unwithdrawn earnings + unwithdrawn (accrued) fees.
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
        assertEq(token.balanceOf(address(escrow)), owed);
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

    /// @dev Lease status never moves backwards.
    function invariant_StatusMonotonic() public {
        handler.observeAll();
        assertFalse(handler.statusWentBack());
    }
}
